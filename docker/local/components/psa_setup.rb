# Idempotent setup of the local PSA (Redmine), run with `rails runner` after the migrations
# and the default data: REST API on, the integration user with its API key (written to
# PSSYNC_PSA_KEY_FILE, 0600), its role, the groups of project managers and of placeholders,
# a demo project manager, and the custom fields pssync reads and writes.
# Prints one JSON line describing what it found or made.
require 'json'
require 'securerandom'

key_file = ENV.fetch('PSSYNC_PSA_KEY_FILE')
login = ENV.fetch('PSSYNC_PSA_LOGIN', 'pssync')
made = []

Setting.rest_api_enabled = '1'

# Only what pssync does: projects, versions, issues, memberships and approved time.
permissions = %i[
  add_project edit_project add_subprojects select_project_modules manage_members
  manage_versions view_issues add_issues edit_issues manage_subtasks
  view_time_entries log_time edit_time_entries log_time_for_other_users
]
role = Role.find_by(name: 'pssync integration') || Role.new(name: 'pssync integration')
made << 'role' if role.new_record?
role.permissions = permissions
role.assignable = true
role.issues_visibility = 'all'
role.time_entries_visibility = 'all'
role.users_visibility = 'members_of_visible_projects'
role.save!
# A non-admin creating a project becomes its member with this role.
Setting.new_project_user_role_id = role.id.to_s

user = User.find_by_login(login) || User.new
if user.new_record?
  user.login = login
  user.firstname = 'pssync'
  user.lastname = 'integration'
  user.mail = "#{login}@localhost.invalid"
  user.password = SecureRandom.urlsafe_base64(24)
  made << 'user'
end
user.admin = false
user.status = User::STATUS_ACTIVE
user.save!

# Redmine grants `add_project` only to users holding a role with it in some project:
# the integration user is a member of one private anchor project.
anchor = Project.find_by(identifier: 'pssync-integration') ||
  Project.new(name: 'pssync integration', identifier: 'pssync-integration', is_public: false)
if anchor.new_record?
  anchor.enabled_module_names = []
  anchor.save!
  made << 'anchor project'
end
unless Member.where(project_id: anchor.id, user_id: user.id).exists?
  Member.create!(project: anchor, principal: user, role_ids: [role.id])
  made << 'membership'
end

# Redmine has no placeholder resources: a group per role to staff later stands in for one,
# a member of every new project until people are assigned. Project managers are found in
# their group (a non-admin cannot list users). The groups are members of the anchor project
# with a role that grants nothing, so the integration user can see them and their users.
directory_role = Role.find_by(name: 'pssync directory') || Role.new(name: 'pssync directory')
made << 'directory role' if directory_role.new_record?
directory_role.permissions = []
directory_role.assignable = false
directory_role.save!
groups = ['Project managers', 'Placeholder: Solution architect', 'Placeholder: Consultant',
          'Placeholder: Project manager'].map do |name|
  group = Group.find_by(lastname: name) || Group.new(lastname: name)
  if group.new_record?
    group.save!
    made << "group #{name}"
  end
  unless Member.where(project_id: anchor.id, user_id: group.id).exists?
    Member.create!(project: anchor, principal: group, role_ids: [directory_role.id])
    made << "directory membership #{name}"
  end
  group
end

# A project manager the demo and the tests can staff (mail shown: found by mail too).
pm = User.find_by_login('demo.pm') || User.new
if pm.new_record?
  pm.login = 'demo.pm'
  pm.firstname = 'Demo'
  pm.lastname = 'Project Manager'
  pm.mail = 'demo.pm@localhost.invalid'
  pm.password = SecureRandom.urlsafe_base64(24)
  pm.status = User::STATUS_ACTIVE
  pm.save!
  made << 'demo project manager'
end
pm.pref.hide_mail = false
pm.pref.save!
groups.first.users << pm unless groups.first.users.include?(pm)

def ensure_field(klass, name, format, made, extra = {})
  field = klass.find_by(name: name) || klass.new(name: name, field_format: format)
  made << "custom field #{name}" if field.new_record?
  field.visible = true
  field.editable = true if field.respond_to?(:editable=)
  extra.each { |k, v| field.send("#{k}=", v) }
  field.save!
  field
end
ensure_field(TimeEntryCustomField, 'Approved', 'bool', made, default_value: '0')
# A filter: the PSA port lists the projects of one ERP code (Redmine keeps identifiers unique
# only in its application code, so two concurrent creates can both succeed).
ensure_field(ProjectCustomField, 'ERP project code', 'string', made, is_filter: true)
ensure_field(ProjectCustomField, 'Invoiced to date', 'float', made)
ensure_field(ProjectCustomField, 'Recognized revenue', 'float', made)

# Expenses are issues of an "Expense" tracker: people enter amount, currency, category and
# billability, an approver ticks "Approved" (pssync posts approved expenses to the ERP).
expense = Tracker.find_by(name: 'Expense') || Tracker.new(name: 'Expense')
if expense.new_record?
  expense.default_status = IssueStatus.sorted.first
  expense.save!
  # The usual workflow, so people can move expenses through the statuses they know.
  source = Tracker.find_by(name: 'Bug')
  expense.copy_workflow_rules(source) if source
  made << 'tracker Expense'
end
# Every new project gets it, like the default trackers.
defaults = Array(Setting.default_projects_tracker_ids).map(&:to_s)
unless defaults.include?(expense.id.to_s)
  Setting.default_projects_tracker_ids = defaults + [expense.id.to_s]
  made << 'Expense tracker on new projects'
end
def ensure_expense_field(name, format, tracker, made, extra = {})
  field = ensure_field(IssueCustomField, name, format, made,
                       { is_for_all: true, is_filter: true }.merge(extra))
  unless field.trackers.include?(tracker)
    field.trackers << tracker
    field.save!
  end
  field
end
ensure_expense_field('Expense amount', 'float', expense, made, is_required: false)
ensure_expense_field('Expense currency', 'list', expense, made,
                     possible_values: %w[EUR USD GBP], default_value: 'EUR')
ensure_expense_field('Expense category', 'list', expense, made,
                     possible_values: %w[travel lodging meals mileage software materials other],
                     default_value: 'other')
ensure_expense_field('Billable', 'bool', expense, made, default_value: '1')
ensure_expense_field('Expense approved', 'bool', expense, made, default_value: '0')

# A new key when the file is missing: the old one is unknown to the caller.
unless File.exist?(key_file) && File.read(key_file).strip == user.api_key
  Token.where(user_id: user.id, action: 'api').delete_all
  user.reload
  key = user.api_key
  File.open(key_file, File::WRONLY | File::CREAT | File::TRUNC, 0o600) { |f| f.write(key) }
  File.chmod(0o600, key_file)
  made << 'api key'
end

puts JSON.generate(user: user.id, role: role.id, login: login, made: made)
